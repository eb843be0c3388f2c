from libs.migrations import run
from services.billing.models import Base

run(Base.metadata)
