"""Everything Modal: the same training and sampling as the local commands, on Modal.

:mod:`.settings` (defaults, the checkout, volume paths) and :mod:`.check` (is the extra
installed, are there credentials) import without ``modal``; :mod:`.image`, :mod:`.app`,
:mod:`.jobs`, :mod:`.plan` and :mod:`.volume` need it. Importing this package imports
none of them.
"""
