from app.core.errors import AppError


class NoTierLadder(AppError):
    status = 404
    code = "no_tier_ladder"
    title = "The program has no tier ladder yet"


class CampaignNotFound(AppError):
    status = 404
    code = "campaign_not_found"
    title = "No such campaign"


class CampaignCodeTaken(AppError):
    status = 409
    code = "campaign_code_taken"
    title = "A campaign with this code exists"


class CampaignEnded(AppError):
    status = 409
    code = "campaign_ended"
    title = "The campaign has ended already"
