"""WeChat mini-program server APIs (login: ``jscode2session``)."""
