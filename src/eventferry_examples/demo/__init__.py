"""``eventferry demo``: the live-stream example running in one command (``session``), with a live view of
the broker's figures per Trigger (``figures``, ``view``) and of what the services made of the events."""
