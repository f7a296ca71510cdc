"""The risk engine (house plan §11): features -> rules -> online model -> allow | step-up | block.

Every decision is a record naming the rule set and model version that made it.
"""
