"""Alibaba Cloud SMS (dysmsapi 2017-05-25): SendSms, QuerySendDetails, SmsReport and SmsUp pushes (§1.1)."""
