"""Domain services: every state change of the protocol, callable from the consumer, the admin and commands.

Each write is one function, keyword arguments, one transaction (rows locked where two connections can race),
notifications queued to go out on commit. Nothing here knows about WebSockets.
"""
