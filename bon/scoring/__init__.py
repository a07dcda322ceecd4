"""Answer scorers: does a model's final answer match the reference?"""
