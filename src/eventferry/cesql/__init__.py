from eventferry.dataplane.cesql import *  # noqa  TEMPORARY SHIM
from eventferry.dataplane.cesql import CESQLParseError, compile_expression  # noqa  TEMPORARY SHIM
