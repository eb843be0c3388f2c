"""The public gallery and share links, served by the generation process.

A community post is made from one of its author's completed images or
videos and copies the media, prompt and model name at publish time; a share
link makes one generation viewable by anyone who holds the link. Both are
rows of the generation schema, so deleting the generation removes them.
"""
