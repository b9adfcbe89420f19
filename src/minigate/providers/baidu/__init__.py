"""Baidu AI face (aip.baidubce.com): name + ID checks and face verification with an OAuth access token."""
