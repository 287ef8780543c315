"""Stand-in Mastodon: a small Python application with the observable surface of Mastodon 4.3 that a live
migration touches (see README.md in docker/standin/)."""
