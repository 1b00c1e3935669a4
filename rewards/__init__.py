"""Judges, divergences from stored token summaries, group normalisation, combined rewards and
GRPO advantages: pure functions over Arrow tables plus judge clients. Imports only schemas/."""
