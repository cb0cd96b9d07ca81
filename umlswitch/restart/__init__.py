"""Seamless restart: a new umlswitch process takes over every descriptor and the state.

``umlswitch ctl restart`` and SIGUSR2 start the same command again (``command.py``) with one
end of a socketpair (``wire.py``). The old process sends the new one the listening sockets
(``listeners.py``); the new one adopts them and says it is ready; the old one then stops
reading frames, sends the final state as a versioned document (``document.py``, ``state.py``)
with every port's descriptors (``kinds.py``), waits for the new one to say it runs, and exits
without removing a socket file. ``handover.py`` holds both sides of that conversation.
"""
