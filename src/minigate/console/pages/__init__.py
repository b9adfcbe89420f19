"""Console pages, one module per area; importing a module registers its routes on
:data:`minigate.console.web.router`."""

from minigate.console.pages import analytics, approvals, dashboard, operations, orders, sandbox, session, settings

#: the modules that make up the console (imported for their routes)
PAGES = (session, dashboard, orders, approvals, operations, analytics, settings, sandbox)
