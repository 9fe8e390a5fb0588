"""The AWS serverless mode's Lambda functions, one module each:

- `http.handler`: the HTTP API (API Gateway, payload format 2.0) through Mangum;
- `websocket.handler`: the WebSocket API's `$connect`, `$disconnect` and `$default` routes;
- `outbox.handler`: the table's DynamoDB stream, new deliveries forwarded to SQS;
- `worker.handler`: the SQS queue of deliveries, sent by the delivery engine;
- `scheduler.handler`: EventBridge every minute: scheduled notifications, broadcasts, app
  events and housekeeping.

`runtime` holds what a process keeps between invocations; `events` checks the events' shapes.
Importing this package imports none of them.
"""
