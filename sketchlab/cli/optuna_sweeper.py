"""``hydra/sweeper=optuna``: Bayesian hyper-parameter search with Optuna, trials pruned during training.

Why a sweeper of our own: the official ``hydra-optuna-sweeper`` (1.3) pins ``optuna<3``, whose SQLAlchemy 1
pin clashes with MLflow's SQLAlchemy 2, so the two cannot be installed together. ``hydra-optuna-mlflow-sweeper``
(0.1.3) installs into the official plugin's ``hydra_plugins/hydra_optuna_sweeper`` folder, logs through MLflow's
fluent API (one global active run, where our parent and child runs are made with ``MlflowClient``, see
:mod:`sketchlab.tracking.loggers`) and cannot prune. Optuna's ask/tell API makes a search small to write:

1. The search space is Hydra's sweep grammar, from ``hydra.sweeper.params`` and the command line (the command
   line wins for a key in both): ``choice(a,b)`` and ``a,b`` are categorical, ``interval(lo,hi)`` is a float
   range (``tag(log, ...)`` log-uniform, ``tag(int, ...)`` integers), ``range(start,stop[,step])`` an int (or
   float) grid without ``stop``. Every other override is passed to each trial as it is.
2. The study lives in ``hydra.sweeper.storage`` (default: ``optuna.db`` beside the MLflow sqlite store,
   ``outputs/optuna.db``) under ``study_name`` (default: the experiment's name) and is created or continued
   (``load_if_exists``): each invocation adds ``n_trials`` new trials. Continuing with another search space
   or direction is refused.
3. ``n_jobs`` trials are asked at once and launched as one batch through the configured launcher (basic: one
   after the other; joblib: in parallel; slurm: as jobs), then told their results.
4. Each trial's job gets ``sweep_trial={storage, study_name, trial_id, number}``; the training reports each
   validation loss to the trial and stops when the pruner says so (:class:`TrialReporter`, wired in
   :mod:`sketchlab.cli.train`). The job marks the trial (:data:`~sketchlab.tracking.study.PRUNED_AT_ATTR`) and
   returns normally, its MLflow child run FINISHED with tag ``sketchlab.trial_state=pruned``; the sweeper
   then tells Optuna PRUNED. A failed job is told FAIL; the search stops once more than
   ``max_failure_rate`` of this invocation's ``n_trials`` have failed.
5. :class:`~sketchlab.tracking.sweep.MLflowSweepCallback` makes the MLflow parent run, and at the end logs the
   study's best value and parameters, trial counts and Optuna's plots on it (the sweeper leaves
   :data:`~sketchlab.tracking.study.STUDY_FILE` in the sweep folder to say which study).

How Hydra finds it: Hydra only builds sweepers whose class is named ``hydra_plugins.*`` and that its plugin
registry knows. :func:`register_plugin` (called by ``sketchlab-train`` before Hydra starts) names this class
``hydra_plugins.sketchlab_optuna_sweeper.OptunaSweeper`` and registers it. Shipping a ``hydra_plugins``
package portion instead (a setup.cfg ``package_dir`` mapping of a folder inside ``sketchlab/``) would only work
for a wheel: Hydra discovers plugins with ``pkgutil.walk_packages``, which does not list a portion mapped by a
setuptools editable install (checked with setuptools 84: importable, not listed), and a checkout run through
``PYTHONPATH`` has no ``hydra_plugins`` folder at all. Registering at run time works for the three alike.
"""

from __future__ import annotations

import functools
import logging
import math
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from hydra.plugins.sweeper import Sweeper
from omegaconf import DictConfig, OmegaConf

from sketchlab.tracking.study import PRUNED_AT_ATTR, StudyRecord
from sketchlab.validation import ConfigValueError, check_choice, check_float, check_int

log = logging.getLogger("sketchlab.sweep")

PLUGIN_MODULE = "hydra_plugins.sketchlab_optuna_sweeper"
SAMPLERS = {"tpe": "TPESampler", "random": "RandomSampler", "qmc": "QMCSampler", "gp": "GPSampler",
            "cmaes": "CmaEsSampler"}
PRUNERS = {"median": "MedianPruner", "percentile": "PercentilePruner", "successive_halving": "SuccessiveHalvingPruner",
           "hyperband": "HyperbandPruner", "threshold": "ThresholdPruner", "none": "NopPruner"}
SEARCH_SPACE_ATTR = "sketchlab.search_space"
_BARE = re.compile(r"[A-Za-z_][\w\-]*")  # strings an override may carry unquoted
_KEYWORDS = {"null", "true", "false", "nan", "inf"}


# -- the search space ------------------------------------------------------------------------------
def quote(text: str) -> str:
    """``text`` as a quoted string of Hydra's override grammar (a backslash escapes only quotes)."""
    escaped = re.sub(r"(\\*)'", lambda m: m.group(1) * 2 + "\\'", text)
    escaped = re.sub(r"(\\+)$", lambda m: m.group(1) * 2, escaped)
    return f"'{escaped}'"


def override_value(value: Any) -> str:
    """A sampled value as Hydra reads it back exactly: floats by ``repr``, strings quoted when needed."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, (int, float)):
        return repr(value)
    text = str(value)
    return text if _BARE.fullmatch(text) and text.lower() not in _KEYWORDS else quote(text)


def _distribution(override: Any) -> Any:
    """The Optuna distribution of one sweep override (see the module docstring for the grammar)."""
    from hydra.core.override_parser.types import Transformer
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    key = override.get_key_element()
    if override.is_interval_sweep():
        value = override.value()
        log_scale, as_int = "log" in value.tags, "int" in value.tags
        if as_int:
            return IntDistribution(int(value.start), int(value.end), log=log_scale)
        return FloatDistribution(float(value.start), float(value.end), log=log_scale)
    values = list(override.sweep_iterator(transformer=Transformer.identity))
    if not values:
        raise ConfigValueError(f"{key}: the sweep '{override.input_line}' has no values")
    bad = [v for v in values if not isinstance(v, (str, int, float, bool))]
    if bad:
        raise ConfigValueError(f"{key}: the Optuna sweeper samples strings and numbers, not {bad[0]!r} "
                               f"(in '{override.input_line}'); put such values in a config group and choose it")
    if override.is_range_sweep() and not override.value().shuffle and len(values) > 1:
        step = values[1] - values[0]
        if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            return IntDistribution(values[0], values[-1], step=step)
        return FloatDistribution(float(values[0]), float(values[-1]), step=float(step))
    return CategoricalDistribution(values)


def search_space(arguments: Sequence[str]) -> tuple[dict[str, Any], dict[str, str], list[str]]:
    """``(distributions, keys, fixed)`` from overrides: each swept parameter's distribution and its override
    key (``+`` kept), and the other overrides as ``key=value`` for every trial. A later override of a key wins."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    swept: dict[str, Any] = {}
    keys: dict[str, str] = {}
    fixed: dict[str, str] = {}
    for override in OverridesParser.create().parse_overrides(list(arguments)):
        name = override.key_or_group
        swept.pop(name, None)
        fixed.pop(name, None)
        if override.is_sweep_override():
            swept[name], keys[name] = _distribution(override), override.get_key_element()
        elif override.is_delete():
            fixed[name] = override.input_line
        else:
            fixed[name] = f"{override.get_key_element()}={override.get_value_element_as_str()}"
    return swept, keys, list(fixed.values())


# -- samplers and pruners --------------------------------------------------------------------------
def _spec(spec: Any, key: str, names: Mapping[str, str], default: str) -> tuple[str, dict[str, Any]]:
    """``(name, kwargs)`` of ``{name: ..., kwargs: {...}}`` or of a bare name."""
    if spec is None:
        return default, {}
    if isinstance(spec, DictConfig):
        spec = OmegaConf.to_container(spec, resolve=True)
    if isinstance(spec, str):
        spec = {"name": spec}
    if not isinstance(spec, Mapping):
        raise ConfigValueError(f"{key} must be {{name: ..., kwargs: {{...}}}}, got {spec!r}")
    name = check_choice(spec.get("name", default), f"{key}.name", tuple(names))
    kwargs = spec.get("kwargs") or {}
    if not isinstance(kwargs, Mapping):
        raise ConfigValueError(f"{key}.kwargs must be a mapping of the Optuna class's arguments, got {kwargs!r}")
    return name, dict(kwargs)


def make_sampler(spec: Any, seed: int | None) -> Any:
    """The Optuna sampler ``hydra.sweeper.sampler`` names, seeded with ``seed``."""
    import optuna

    name, kwargs = _spec(spec, "hydra.sweeper.sampler", SAMPLERS, "tpe")
    try:
        return getattr(optuna.samplers, SAMPLERS[name])(seed=seed, **kwargs)
    except ImportError as exc:  # cmaes, gp: optional packages of Optuna's
        raise ConfigValueError(f"hydra.sweeper.sampler.name={name} needs a package that is not installed: {exc}") \
            from exc
    except (TypeError, ValueError) as exc:
        raise ConfigValueError(f"hydra.sweeper.sampler.kwargs: {exc} (optuna.samplers.{SAMPLERS[name]})") from exc


def make_pruner(spec: Any) -> Any:
    """The Optuna pruner ``hydra.sweeper.pruner`` names (``none``: never prune)."""
    import optuna

    name, kwargs = _spec(spec, "hydra.sweeper.pruner", PRUNERS, "none")
    try:
        return getattr(optuna.pruners, PRUNERS[name])(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigValueError(f"hydra.sweeper.pruner.kwargs: {exc} (optuna.pruners.{PRUNERS[name]})") from exc


def default_storage(config: DictConfig) -> str:
    """``sqlite:///<folder>/optuna.db``: beside the MLflow sqlite store, else in the outputs folder."""
    from sketchlab.tracking.loggers import resolve_tracking_uri

    logger = config.get("logger") or {}
    outputs = Path(str(logger.get("outputs_dir") or config.paths.output_dir)).expanduser().resolve()
    folder = outputs
    if "tracking_uri" in logger:  # the MLflow logger (logger=none has no store)
        uri = resolve_tracking_uri(logger.get("tracking_uri"), outputs)
        if uri.startswith("sqlite:///") and ":memory:" not in uri:
            folder = Path(uri.removeprefix("sqlite:///").split("?", 1)[0]).parent
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{folder / 'optuna.db'}"


def storage_url(storage: str | None, config: DictConfig) -> str:
    """``hydra.sweeper.storage`` as a URL: a plain path is an sqlite file; null is :func:`default_storage`."""
    if not storage:
        return default_storage(config)
    if "://" in storage:
        return storage
    path = Path(storage).expanduser().resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}"


def default_study_name(config: DictConfig) -> str:
    """The experiment's name (``experiment=...``), else the MLflow experiment's, else ``sketchlab``."""
    choice = config.hydra.runtime.choices.get("experiment")
    if choice:
        return str(choice)
    return str((config.get("logger") or {}).get("experiment_name") or "sketchlab")


# -- the job's side --------------------------------------------------------------------------------
class TrialReporter:
    """Inside a trial's training: reports each validation loss to the trial; True when the pruner says stop.

    Pass it as ``Trainer.fit(should_stop=...)``. ``pruner`` is ``hydra.sweeper.pruner`` (the job reads it
    from its own Hydra config, so the sweeper and the job prune by the same rule).
    """

    def __init__(self, storage: str, study_name: str, trial_id: int, pruner: Any = None) -> None:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study = optuna.load_study(study_name=study_name, storage=storage, pruner=make_pruner(pruner))
        self.trial = optuna.trial.Trial(study, int(trial_id))
        self.pruned_at: int | None = None

    def __call__(self, step: int, losses: Mapping[str, float]) -> bool:
        value = losses.get("loss")
        if value is None or not math.isfinite(value):
            return False
        self.trial.report(float(value), int(step))
        if not self.trial.should_prune():
            return False
        self.trial.set_user_attr(PRUNED_AT_ATTR, int(step))
        self.pruned_at = int(step)
        log.info("trial %d pruned at step %d (val loss %.4f)", self.trial.number, step, value)
        return True


# -- the sweeper -----------------------------------------------------------------------------------
class OptunaSweeper(Sweeper):
    """Optuna ask/tell search over Hydra's launchers; configured by ``conf/hydra/sweeper/optuna.yaml``."""

    # Hydra builds only plugins named hydra_plugins.* (see register_plugin)
    __module__ = PLUGIN_MODULE

    def __init__(self, n_trials: int = 20, n_jobs: int = 1, direction: str = "minimize", seed: int | None = 0,
                 sampler: Any = None, pruner: Any = None, storage: str | None = None, study_name: str | None = None,
                 max_failure_rate: float = 0.5, params: Mapping[str, Any] | None = None) -> None:
        self.n_trials = check_int(n_trials, "hydra.sweeper.n_trials", min=1)
        self.n_jobs = check_int(n_jobs, "hydra.sweeper.n_jobs", min=1)
        self.direction = check_choice(direction, "hydra.sweeper.direction", ("minimize", "maximize"))
        self.seed = check_int(seed, "hydra.sweeper.seed", optional=True)
        self.max_failure_rate = check_float(max_failure_rate, "hydra.sweeper.max_failure_rate", min=0, max=1)
        self.sampler_spec, self.pruner_spec = sampler, pruner
        _spec(sampler, "hydra.sweeper.sampler", SAMPLERS, "tpe")  # a bad name fails before any trial
        make_pruner(pruner)
        self.storage, self.study_name = storage, study_name
        self._storage = ""  # the storage URL, known once the sweep's config is
        self.params = dict(params or {})
        self.config: DictConfig | None = None
        self.hydra_context: Any = None
        self.launcher: Any = None
        self.job_idx = 0

    def setup(self, *, hydra_context: Any, task_function: Any, config: DictConfig) -> None:
        from hydra.core.plugins import Plugins

        self.config, self.hydra_context, self.job_idx = config, hydra_context, 0
        self.launcher = Plugins.instance().instantiate_launcher(hydra_context=hydra_context,
                                                                task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> list[Sequence[Any]]:
        """Run ``n_trials`` new trials of the study, ``n_jobs`` at a time; returns the launcher's results."""
        import optuna

        assert self.config is not None and self.launcher is not None
        optuna.logging.set_verbosity(optuna.logging.WARNING)  # our own log lines say what happens
        space, keys, fixed = search_space([*(f"{k}={v}" for k, v in self.params.items()), *arguments])
        if not space:
            raise ConfigValueError("hydra/sweeper=optuna needs a search space: sweep overrides such as "
                                   "'optim.lr=tag(log,interval(1e-4,1e-2))' 'model.net.dec_model=choice(lstm,hyper)' "
                                   "on the command line or in hydra.sweeper.params")
        study = self._study(space)
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        record = StudyRecord(storage=self._storage, study_name=study.study_name, direction=self.direction)
        record.write(sweep_dir)
        self._hint_parallel()

        returns: list[Sequence[Any]] = []
        failures: list[BaseException] = []
        left = self.n_trials
        while left > 0:
            trials = [study.ask(space) for _ in range(min(self.n_jobs, left))]
            left -= len(trials)
            record.trials += [t.number for t in trials]
            record.write(sweep_dir)
            batch = [[*fixed, *(f"{keys[k]}={override_value(v)}" for k, v in t.params.items()),
                      self._trial_override(study, t)] for t in trials]
            for t in trials:
                log.info("trial %d: %s", t.number, ", ".join(f"{k}={v}" for k, v in t.params.items()))
            try:
                self.validate_batch_is_legal(batch)
                results = self.launcher.launch(batch, initial_job_idx=self.job_idx)
            except BaseException:  # e.g. Ctrl-C: the asked trials must not stay RUNNING in the study
                for t in trials:
                    study.tell(t, state=optuna.trial.TrialState.FAIL)
                raise
            self.job_idx += len(batch)
            returns.append(results)
            failures += self._tell(study, trials, results)
            if len(failures) > self.max_failure_rate * self.n_trials:
                from sketchlab.cli.errors import UserError

                raise UserError(f"the search stopped: {len(failures)} of its {self.n_trials} trials failed (more than "
                                f"hydra.sweeper.max_failure_rate={self.max_failure_rate:g} of them); the first: "
                                f"{failures[0]}") from failures[0]
        return returns

    # -- pieces -------------------------------------------------------------------------------------
    def _study(self, space: Mapping[str, Any]) -> Any:
        """Create the study, or continue it when its search space and direction are the same."""
        import optuna
        from optuna.distributions import distribution_to_json

        assert self.config is not None
        self._storage = storage_url(self.storage, self.config)
        name = str(self.study_name or default_study_name(self.config))
        storage = optuna.storages.RDBStorage(self._storage)
        earlier = (len(optuna.load_study(study_name=name, storage=storage).trials)
                   if name in optuna.get_all_study_names(storage) else 0)
        # a continued study with a seeded sampler must not draw its first trials' values again
        seed = None if self.seed is None else self.seed + earlier
        study = optuna.create_study(storage=storage, study_name=name, direction=self.direction,
                                    sampler=make_sampler(self.sampler_spec, seed), pruner=make_pruner(self.pruner_spec),
                                    load_if_exists=True)
        if study.direction.name.lower() != self.direction:
            raise ConfigValueError(f"hydra.sweeper.direction: study '{name}' in {self._storage} was created to "
                                   f"{study.direction.name.lower()}; give another hydra.sweeper.study_name")
        wanted = {k: distribution_to_json(d) for k, d in space.items()}
        known = study.user_attrs.get(SEARCH_SPACE_ATTR)
        if known is not None and known != wanted:
            diff = sorted(k for k in set(known) | set(wanted) if known.get(k) != wanted.get(k))
            raise ConfigValueError(f"study '{name}' in {self._storage} was searched over another space (differs in: "
                                   f"{', '.join(diff)}); keep its search space to continue it, or start a new study "
                                   "with hydra.sweeper.study_name=<new name>")
        if known is None:
            study.set_user_attr(SEARCH_SPACE_ATTR, wanted)
        log.info("Optuna study '%s' in %s: %s; %d new trial(s), %d at a time, sampler %s, pruner %s",
                 name, self._storage, f"continuing after {earlier} trial(s)" if earlier else "new",
                 self.n_trials, self.n_jobs, type(study.sampler).__name__, type(study.pruner).__name__)
        return study

    def _trial_override(self, study: Any, trial: Any) -> str:
        """``sweep_trial={...}``: where the job reports its validation losses (see :class:`TrialReporter`)."""
        return (f"sweep_trial={{storage:{quote(self._storage)},study_name:{quote(study.study_name)},"
                f"trial_id:{trial._trial_id},number:{trial.number}}}")

    def _tell(self, study: Any, trials: Sequence[Any], results: Sequence[Any]) -> list[BaseException]:
        """Tell the study each trial's outcome; returns the failures."""
        from hydra.core.utils import JobStatus
        from optuna.trial import TrialState

        # the pruned mark is set by the job: read the trials again from the storage
        fresh = {t.number: t for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
        failures: list[BaseException] = []
        for trial, result in zip(trials, results):
            error: BaseException | None = None
            value = math.nan
            if result.status == JobStatus.COMPLETED:
                try:
                    value = float(result.return_value)
                except (TypeError, ValueError):
                    error = ValueError(f"trial {trial.number}'s job returned {result.return_value!r}, not a number")
            else:
                try:
                    result.return_value  # raises the job's exception
                except BaseException as exc:  # noqa: BLE001 - any failure of a job is a failed trial
                    error = exc
            pruned_at = fresh[trial.number].user_attrs.get(PRUNED_AT_ATTR) if trial.number in fresh else None
            if error is None and pruned_at is not None:
                study.tell(trial, state=TrialState.PRUNED)
                log.info("trial %d pruned at step %s", trial.number, pruned_at)
                continue
            if error is None and not math.isfinite(value):
                error = ValueError(f"trial {trial.number} returned {value}: no finite validation loss "
                                   "(does trainer.val_every validate within trainer.max_steps?)")
            if error is not None:
                study.tell(trial, state=TrialState.FAIL)
                log.warning("trial %d failed: %s", trial.number, str(error).splitlines()[0] if str(error) else error)
                failures.append(error)
                continue
            study.tell(trial, value)
            best = study.best_trial
            log.info("trial %d: %.5g (best %.5g, trial %d)", trial.number, value, best.value, best.number)
        return failures

    def _hint_parallel(self) -> None:
        assert self.config is not None
        launcher_jobs = self.config.hydra.launcher.get("n_jobs")
        if isinstance(launcher_jobs, int) and launcher_jobs > self.n_jobs:
            log.info("the launcher can run %d jobs at once, the search asks %d trial(s) at a time: set "
                     "hydra.sweeper.n_jobs=%d to run that many trials in parallel", launcher_jobs, self.n_jobs,
                     launcher_jobs)


# -- exposing it to Hydra --------------------------------------------------------------------------
# the class is found (pickled, imported) under the name Hydra knows it by in any process that imported this module
sys.modules.setdefault(PLUGIN_MODULE, sys.modules[__name__])


def register_plugin() -> None:
    """Make Hydra know :class:`OptunaSweeper` as ``hydra_plugins.sketchlab_optuna_sweeper.OptunaSweeper``.

    Idempotent; call it before Hydra composes a config (``sketchlab-train`` does, beside ``guard_hydra``).
    The plugin registry is rebuilt by a joblib launcher that runs jobs in this process (``n_jobs=1``
    restores Hydra's singletons), so the class is added again after every (re)build.
    """
    from hydra.core.plugins import Plugins

    original = Plugins._initialize
    if not getattr(original, "sketchlab_optuna", False):
        @functools.wraps(original)
        def _initialize(self: Any) -> None:
            original(self)
            self.register(OptunaSweeper)

        _initialize.sketchlab_optuna = True  # type: ignore[attr-defined]
        Plugins._initialize = _initialize  # type: ignore[method-assign]
    Plugins.instance().register(OptunaSweeper)
