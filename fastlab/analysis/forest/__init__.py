"""The forest analysis: the trials encoded, a random forest fitted, importance, partial
dependence, the recommendation and the one rule that words every verdict."""
