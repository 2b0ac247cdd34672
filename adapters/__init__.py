"""Platform adapters, installed as `koalabot_adapters`: each turns one platform's events into
koalabot.events and implements a ReplySink; none knows SQL or TGI."""
