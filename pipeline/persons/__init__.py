"""Persons: tracks of one face joined into the people of a video, by face embeddings of a few good faces.

``sampling`` chooses which faces are embedded (a few per track, bounded), ``identity`` splits tracks at
identity switches, clusters them into persons and leaves out what is no person, ``table`` makes the
``persons`` table. Pure numpy and scipy: the per-video unit (batch) and the live path both call them.
"""
