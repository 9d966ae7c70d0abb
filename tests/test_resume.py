"""resume=: the checkpoint's config wins, overrides are reconciled with it key by key."""

from __future__ import annotations

import pytest

from sketchlab.cli.resume import ResumeConfigError, ResumePlan, reconcile

STORED = {"seed": 0, "optim": {"_target_": "torch.optim.Adam", "lr": 0.001},
          "model": {"net": {"dec_rnn_size": 16}}, "trainer": {"max_steps": 10, "log_every": 5}, "tags": {}}
BASE = {"seed": 0, "optim": {"_target_": "torch.optim.Adam", "lr": 0.001},
        "model": {"net": {"dec_rnn_size": 512}}, "trainer": {"max_steps": 10000, "log_every": 50}, "tags": {}}


def composed(**changes):
    import copy

    cfg = copy.deepcopy(BASE)
    for key, value in changes.items():
        node = cfg
        *parents, leaf = key.split("__")
        for p in parents:
            node = node[p]
        node[leaf] = value
    return cfg


def test_no_overrides_gives_the_checkpoint_config():
    merged, changed = reconcile(STORED, BASE, composed(), [])
    assert merged == STORED and changed == {}


def test_free_keys_are_applied_silently():
    merged, changed = reconcile(STORED, BASE, composed(trainer__max_steps=20, trainer__log_every=1), [])
    assert merged["trainer"] == {"max_steps": 20, "log_every": 1} and merged["model"] == STORED["model"]
    assert changed == {}


def test_shaping_overrides_are_refused_with_the_keys_listed():
    with pytest.raises(ResumeConfigError, match=r"optim.lr: 0.001 in the checkpoint, 0.5 now(.|\n)*"
                                                r"resume_overrides=\[optim.lr,seed\]"):
        reconcile(STORED, BASE, composed(optim__lr=0.5, seed=3), [])


def test_an_override_equal_to_the_checkpoint_is_no_change():
    merged, changed = reconcile(STORED, BASE, composed(model__net__dec_rnn_size=16), [])
    assert merged == STORED and changed == {}


def test_resume_overrides_apply_and_are_reported():
    new = composed(optim__lr=0.5)
    new["optim"]["_target_"] = "torch.optim.AdamW"
    new["optim"]["weight_decay"] = 0.5
    merged, changed = reconcile(STORED, BASE, new, ["optim"])
    assert merged["optim"] == {"_target_": "torch.optim.AdamW", "lr": 0.5, "weight_decay": 0.5}
    assert changed == {"optim._target_": ("torch.optim.Adam", "torch.optim.AdamW"), "optim.lr": (0.001, 0.5),
                       "optim.weight_decay": (None, 0.5)}
    plan = ResumePlan(state={}, checkpoint=None, cfg=__import__("omegaconf").OmegaConf.create(merged),
                      ckpt_dir=None, run_id=None, changed=changed)
    assert plan.keep_hparams == {"lr", "weight_decay"} and not plan.keep_schedule
