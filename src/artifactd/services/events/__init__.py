"""What happened: analytics events, the published event schema and its outbox, subscriptions,
webhook delivery and the pull queue.
"""
