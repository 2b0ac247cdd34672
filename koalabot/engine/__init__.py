"""The engine stage: a stored message in, an answer streamed into the adapter's sink out.

`engine` is the façade the adapters call; the rest is one concern each: `intake` (a message
from arrival to its turn: access, store first, reasons not to answer), `answer` (the turn:
prompt, stream, record; a battle's pair), `prompts` (each model's prompt: its window, its
tokenizer), `battle` (which threads fight, and the choice), `turns` (one answer at a time per
thread, in order), `votes` (the feedback path), `notices` (every sentence the bot says that is
not the model's), `access` (who may, how fast), `streaming` (edit pacing and splitting),
`orphans` (answers a crash cut off) and `backlog` (replaying what was kept while the store was
down).
"""
