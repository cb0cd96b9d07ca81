"""The unix-socket family of ports: the control codec and listener, client data sockets, the
peer-ownership check."""
