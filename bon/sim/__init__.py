"""A calibrated synthetic Best-of-N benchmark at the level of step labels.

Tasks have a difficulty; each candidate's true step labels come from a Markov chain
(so a -1 tends to persist until corrected) chosen by whether the attempt is on track;
a simulated judge then labels the steps through a confusion matrix and calls the
outcome with a true/false positive rate. Everything it produces is synthetic data.
"""
from bon.sim.model import JudgeModel, Profile, SimTrajectories, generate, judge, sample_tasks

SYNTHETIC = "SYNTHETIC DATA (bon simulator)"

__all__ = ["JudgeModel", "Profile", "SimTrajectories", "generate", "judge", "sample_tasks", "SYNTHETIC"]
