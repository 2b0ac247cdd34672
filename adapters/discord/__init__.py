"""Discord: a discord.py client, its events as koalabot events, the reply sink that speaks REST,
and the persistent vote buttons."""
