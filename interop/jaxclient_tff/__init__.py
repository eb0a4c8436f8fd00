"""jaxclient_tff."""
