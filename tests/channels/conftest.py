"""Fixtures of the fake chat platforms, for every test in this folder."""

from tests.fakes.discord import discord_fake  # noqa: F401 - a fixture, used by name
