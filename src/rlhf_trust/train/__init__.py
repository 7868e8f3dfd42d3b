"""The four alignment stages (SFT, reward model, PPO, DPO) on TRL; `common` holds what they share."""
