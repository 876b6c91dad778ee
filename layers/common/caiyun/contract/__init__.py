"""The request and reply models of every action: the interface the mini-programs see."""
