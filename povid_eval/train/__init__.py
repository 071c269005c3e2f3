"""POVID training: preference data (preferences.py) and the DPO losses (dpo.py)."""
