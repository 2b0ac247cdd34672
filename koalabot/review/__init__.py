"""`koalabot review`: a local web page to curate rated answers before they become training data."""

from koalabot.review.app import review_app

__all__ = ["review_app"]
