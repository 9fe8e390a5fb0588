"""The DynamoDB store: the whole Store port on one table (see docs/dynamodb.md)."""
