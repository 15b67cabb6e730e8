"""Offline detection work: traffic generators and real-text corpora, datasets, training,
evaluation and replays. Nothing on the request path imports from here."""
