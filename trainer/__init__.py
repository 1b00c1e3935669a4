"""The trainer: reads a snapshot folder and trains (offline GRPO on TRL, SFT). A snapshot folder is
its whole interface; it imports only schemas/ of ours."""
