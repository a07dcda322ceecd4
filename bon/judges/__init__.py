"""Judges label the steps and outcome of a trajectory.

Kinds: `llm` (a live LLM judge, bon.judges.llm, with its prompt in bon.judges.prompt and its reply parser in
bon.judges.parse), `replay` (recorded LLM judge outputs, e.g. AgentProcessBench's eval/results/) and `human`
(the human labels as an oracle judge), both read by `bon.datasets`, and `sim` (a simulated judge for the
synthetic benchmark, bon.sim). The types and ranges of their options are checked by bon.config.
"""
