"""Orchestration commands: compare, leaderboard, plateau, sweeps, demo, generate."""
