from libs.migrations import run
from services.workspace.models import Base

run(Base.metadata)
