"""Adapters: the outside world (SMS, WeChat, ICBC, storage) behind small interfaces."""
