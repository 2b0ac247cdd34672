"""The fault suite: what a user sees when the model server, the database, the platform or the bot's
own process misbehaves — their message kept, a notice in the thread, later messages answered,
nothing answered twice."""
