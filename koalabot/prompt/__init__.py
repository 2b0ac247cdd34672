"""The prompt stage, pure: a thread's turns in, the exact string for the model out.

`templates` (Koala's formats as data, and the one renderer), `budget` (fit a thread into the
model's window), `history` (page back through the stored thread, as plain records, until the
budget is spent). Nothing here imports the store, the engine or a backend.
"""
