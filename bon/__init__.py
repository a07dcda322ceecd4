"""bon: Best-of-N test-time scaling for tool-using LLM agents."""
__version__ = "0.1.0"
