"""How the bot is used and liked: the numbers and charts behind `koalabot stats`."""
