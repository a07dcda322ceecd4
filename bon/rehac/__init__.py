"""Human-agent collaboration, offline (ReHAC, "LLM-based Human-Agent Collaboration for Complex Task Solving").

Logged episodes in which an agent and a human (in ReHAC's data: gpt-3.5-turbo and gpt-4) take turns are
scored with R = T - lambda*C (T: task reward, C: human steps). `episodes` parses them (JSONL records or a
step tree), `policies` and `metrics` value intervention policies on them, `advantage` builds the table ReHAC
trains on, `best_of_n` selects among a question's episodes by predicted R, `report` is
`bon.run dataset=rehac` (train and test questions, the trained policy paired with fixed ones on the test
questions) and `plot` draws its figure.
"""
