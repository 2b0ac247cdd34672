"""The engine stage: a stored message in, an answer streamed into the adapter's sink out.

`engine` is the façade the adapters call; the rest is one concern each: `answer` (the turn:
lock, prompt, stream, record), `votes` (the feedback path), `notices` (every sentence the bot
says that is not the model's), `access` (who may, how fast), `streaming` (edit pacing and
splitting) and `backlog` (replaying what was kept while the store was down).
"""
