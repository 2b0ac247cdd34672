"""Slack: a slack-bolt app (Socket Mode or HTTP events), its payloads as koalabot events, the
reply sink that speaks the Web API, and the users who are bots."""
