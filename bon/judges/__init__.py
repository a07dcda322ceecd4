"""Judges label the steps and outcome of a trajectory.

Kinds available now: `replay` (recorded LLM judge outputs, e.g. AgentProcessBench's
eval/results/) and `human` (the human labels as an oracle judge), both read by `bon.datasets`, and `sim`
(a simulated judge for the synthetic benchmark, bon.sim). Live LLM judges arrive with the live pipeline.
"""
KINDS = ("replay", "human", "sim", "llm")
