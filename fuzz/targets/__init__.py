"""One module per fuzz target: ``one_input(data)``, ``seeds()`` and ``PREFIX`` (see :class:`fuzz.harness.Target`)."""
