"""Signal study: is there a user-specific personalization signal to explain, and how large a head effect could be seen?

    python -m studies.signal --preset full --model smollm2-135m --data conventions2012

Measures the clean gold loss of every example with its own profile, another user's profile of the same length and no
profile (discovery and evaluation), writes ``signal.csv`` with user-clustered CIs, and the minimal detectable effect
(80% power, alpha .05 after Holm over ``--n-tests`` comparisons) of a paired test on the evaluation users, from the
discovery users' spread of the user-specific gain. Every other study measures the same signal first; this one stops
there, to size a run before paying for it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from harness.analysis import tables
from harness.study.config import StudyConfig, option
from harness.study.lifecycle import finish, start
from harness.runs.folder import Run
from harness.study.signal import prior_mde
from harness.logs import cli

log = logging.getLogger("harness")


@dataclass
class SignalConfig(StudyConfig):
    """The own / other-user / no-profile gains, and the MDE they imply."""

    study = "signal"
    work = ("framing", "clean_losses")  # start(ablates=False)
    n_tests: int = option(5, "comparisons in the primary table (Holm), for the MDE")


def main(argv: list[str] | None = None) -> Run:
    cfg = SignalConfig.from_argv(argv)
    setup, run = start(cfg, ablates=False)
    n_eval_users = len({e.user_id for e in setup.split.evaluation})
    sizing = [{"what": "at the evaluation users" if users == n_eval_users else "at", **prior_mde(
        setup.signal, users, n_tests=cfg.n_tests)} for users in dict.fromkeys((n_eval_users, 16, 32, 64, 128, 256))]
    sd, gain = sizing[0]["sd_user"], sizing[0]["discovery_gain"]
    tables.write_tables(sizing, [("what", "MDE"), ("n_users", "evaluation users"), ("mde", "MDE (nats)"),
                                 ("share_of_gain", "MDE / discovery gain"), ("from", "from")], run.root, "mde",
                        note=run.note)
    log.info("discovery SD of the per-user specific gain %.4f; MDE at %d evaluation users %.4f nats (%.0f%% of the "
             "discovery specific gain %.4f)", sd, n_eval_users, sizing[0]["mde"],
             100 * sizing[0]["share_of_gain"], gain)
    return finish(run, setup, cfg, sizing=sizing, discovery_sd_user=sd)


if __name__ == "__main__":
    cli(main)
