"""Print the simulator's calibrated parameters, measured from AgentProcessBench, as YAML.

    python experiments/calibrate_sim.py [--root DIR] [--judge GPT-5.2]

The profiles go into bon/sim/profiles.yaml and the judge into conf/judge/sim.yaml.
"""
from __future__ import annotations

import argparse

import yaml

from bon.datasets import agentprocessbench as apb
from bon.datasets import locate_root
from bon.sim.calibrate import judge_config, profile_config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=None, help="AgentProcessBench release (default $BON_DATA_DIR)")
    parser.add_argument("--judge", default="GPT-5.2", help="recorded judge for conf/judge/sim.yaml")
    args = parser.parse_args()
    root = locate_root(args.root, option="--root")
    profiles = {s: profile_config(apb.load_records(root, s)) for s in apb.SUBSETS}
    everything = [r for s in apb.SUBSETS for r in apb.load_records(root, s)]
    print(yaml.safe_dump({"profiles": profiles}, sort_keys=False, default_flow_style=None, width=120))
    print(yaml.safe_dump({"judge": judge_config(root, apb.resolve_judges(root, args.judge)[0], everything)},
                         sort_keys=False, default_flow_style=None, width=120))


if __name__ == "__main__":
    from bon.errors import exit_on_user_error

    exit_on_user_error(main)()
