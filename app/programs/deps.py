from typing import Annotated

from fastapi import Depends, Request

from app.programs.service import ProgramContext


def get_program(request: Request) -> ProgramContext:
    program: ProgramContext = request.app.state.program
    return program


CurrentProgram = Annotated[ProgramContext, Depends(get_program)]
