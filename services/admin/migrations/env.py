from libs.migrations import run
from services.admin.models import Base

run(Base.metadata)
