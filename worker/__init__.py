"""``streambridge worker``: the cluster's window steps on faust-streaming (CONTRACT §11).

app     the Faust app: per windowed topic a split agent, a count agent, a table
table   ClosingTable: windows closed per partition, exactly once, after failover
runner  the command: check the config, create the topics, run the Faust worker
"""
