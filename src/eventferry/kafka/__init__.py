"""Consuming Kafka at least once: the one consume loop and offset tracker that the Kafka broker class and
the KafkaSource adapter share."""
