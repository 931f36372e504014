"""CardTwin's traffic generator: a simulation's records streamed into a system under test.

``traffic.stream.stream`` runs a scenario and publishes its records as they happen
(``traffic.records``), paced by an open workload model (``traffic.pacing``), through a sink
(``traffic.sinks``) with retries and a dead-letter file (``traffic.delivery``), every record
accounted for (``traffic.accounting``). ``python run_scenario.py stream`` is its command line;
docs/streaming.md describes what is sent and how.
"""
