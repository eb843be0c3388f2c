from libs.migrations import run
from services.chat.models import Base

run(Base.metadata)
