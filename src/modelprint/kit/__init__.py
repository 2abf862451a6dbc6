"""Protect once, check any suspect: the kit a target's owner makes (``protect``), checks a suspect with (``check``) or many
(``scan``), and the combined verdict of its sets."""
